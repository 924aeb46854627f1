"""The revisions, one file each, oldest first by `down_revision`."""
