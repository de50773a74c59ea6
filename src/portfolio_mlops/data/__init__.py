"""Data: read the layouts users have (layouts), check them (validation), write the canonical panel (ingest)."""
