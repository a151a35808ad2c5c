"""Who may do what: identities, credentials and the audit search over them."""
