"""Fault injection: the attacks of issue 11 (kills, corruption, tampering, hostile input) as tests."""
