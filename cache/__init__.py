"""Verified tensor cache keyed by ``sample_id``: manifest, verify, resume, atomic writes."""
