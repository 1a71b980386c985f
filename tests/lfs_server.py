"""A real Git LFS server (giftless, from PyPI) on a loopback port of its own, for the gating
proxy's tests. Anonymous clients may read and write; objects are stored under the directory
given as the only argument. Prints the port on its first line, then serves until killed."""

import secrets
import sys
import warnings

from giftless.app import init_app
from werkzeug.serving import make_server

storage = sys.argv[1]
warnings.simplefilter("ignore", FutureWarning)
app = init_app(
    additional_config={
        "AUTH_PROVIDERS": ["giftless.auth.allow_anon:read_write"],
        "LEGACY_ENDPOINTS": False,
        # Upload and download actions carry tokens signed with a key of this run's own.
        "PRE_AUTHORIZED_ACTION_PROVIDER": {
            "factory": "giftless.auth.jwt:factory",
            "options": {"algorithm": "HS256", "private_key": secrets.token_hex(32)},
        },
        "TRANSFER_ADAPTERS": {
            "basic": {
                "factory": "giftless.transfer.basic_streaming:factory",
                "options": {
                    "storage_class": "giftless.storage.local_storage:LocalStorage",
                    "storage_options": {"path": storage},
                },
            }
        },
    }
)
server = make_server("127.0.0.1", 0, app, threaded=True)
print(server.server_port, flush=True)
server.serve_forever()
