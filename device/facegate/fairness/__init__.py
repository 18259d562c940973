"""Per-group error rates of the people enrolled at a site, from their stored templates (``facegate fairness``)."""
