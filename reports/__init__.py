"""reports: arrives with the decode study (issue 3)."""
