# twistd -ny tac/obsd.tac : the same daemon as `twistd -n obsd`.
# The config path comes from OBSD_CONFIG; without it the embedded default runs.
import os

from twisted.application.service import Application

from obsd.daemon.tap import Options, makeService

options = Options()
options.parseOptions(["--config", os.environ["OBSD_CONFIG"]] if os.environ.get("OBSD_CONFIG") else [])
application = Application("obsd")
makeService(options).setServiceParent(application)
