#!/usr/bin/env python3
"""The reference project's manage.py: `python3 manage.py test microsoft`."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "megdocs_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
