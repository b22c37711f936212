"""Fixtures that start real programs on 127.0.0.1 (once each, session-scoped where costly)."""

from tests.integration.fixtures.carbon import _carbon_cache  # noqa: F401
from tests.integration.fixtures.chromium import _chromium  # noqa: F401
from tests.integration.fixtures.es import es_node, es_restartable_node  # noqa: F401
from tests.integration.fixtures.influxdb import _influxdb  # noqa: F401
from tests.integration.fixtures.kafka import _kafka  # noqa: F401
from tests.integration.fixtures.obsd import _obsd_process  # noqa: F401
from tests.integration.fixtures.prometheus import _prometheus  # noqa: F401
from tests.integration.fixtures.rsyslog import _rsyslog  # noqa: F401
from tests.integration.fixtures.rsyslog_receiver import _rsyslog_receiver  # noqa: F401
from tests.integration.fleet_helpers import _etsy  # noqa: F401
