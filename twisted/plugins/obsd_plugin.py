"""twistd's entry for obsd: lazy, so plugin discovery imports nothing of obsd."""

from twisted.application.service import ServiceMaker

obsd = ServiceMaker(
    "obsd",
    "obsd.daemon.tap",
    "Errors, metrics and logs in one place: StatsD, syslog and Sentry in; "
    "Elasticsearch, Graphite and Sentry out.",
    "obsd",
)
