"""Operations `run` never imports: garbage collection, the status report, htpasswd."""
