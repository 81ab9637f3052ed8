"""What every wing may use, and which imports nothing else of sedi but :mod:`sedi.exceptions`: the run's typed
vocabulary (``vocabulary``), atomic file writes (``files``), fault injection for crash tests (``faults``), the
hardware probe and the offline environment (``hardware``), and secret redaction (``redact``)."""
