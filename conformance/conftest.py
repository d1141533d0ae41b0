"""``pytest conformance``: the template project's tests run only from a copy of it (our CI
tests the template through ``tests/test_template.py``)."""

collect_ignore = ["template"]
