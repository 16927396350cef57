"""pytest-medrobust: gate image-report retrieval models on occlusion robustness.

The plugin itself lives in :mod:`pytest_medrobust.plugin`; the engines it drives are importable
on their own: :mod:`~pytest_medrobust.occlusion`, :mod:`~pytest_medrobust.models`,
:mod:`~pytest_medrobust.datasets`, :mod:`~pytest_medrobust.metrics`,
:mod:`~pytest_medrobust.gate` (the decision) and :mod:`~pytest_medrobust.reporting`.

Importing this package does not import torch: plain ``pytest`` stays fast.
"""

__version__ = "0.1.0"
