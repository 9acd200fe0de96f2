"""Site provisioning: PKI, broker configuration and ACL, bulk enrolment."""
