"""Operations `run` never imports: check, status, garbage collection, htpasswd (each
imported by the CLI inside its command; gc's estimate also by the loop, lazily, once the
disk runs low)."""
