"""Self-hosted license server for vendors of WHMCS modules."""
