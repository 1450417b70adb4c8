"""The ``tfree`` command line: a thin click layer over ``tfree_codec``. Installed as the ``tfree_cli`` package."""
