from tests.integration.fixtures.es import es_node  # noqa: F401
