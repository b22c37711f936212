"""The real programs the how-to pages' tests share (once per session)."""

from tests.integration.fixtures.es import es_node  # noqa: F401
