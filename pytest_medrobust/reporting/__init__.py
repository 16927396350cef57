"""Reports of a gate run: the results JSON, the terminal summary, HTML, Markdown and pictures.

Every report is rendered from the results dictionary (:func:`results.build_results`), so the
JSON, the HTML and the terminal always show the same numbers.
"""
