"""`edgerobust certify`: certificates for the shipped artifact in the arithmetic of its device (bound engine in
edgerobust/bounds)."""
