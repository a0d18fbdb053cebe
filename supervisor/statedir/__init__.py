"""The state dir (MY_REG_STATE_DIR): the state file, the HTTP secret, the maintenance lock,
the cached registry versions. Every file is written through files.py: atomically, private
to root."""
