"""User-side model modules for the plugin tests: imported by ``--model tests.user_models.MODULE:ATTR``."""
