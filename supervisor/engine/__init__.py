"""The Docker engine adapter: the only part of the package that imports docker-py."""
