"""``python3 -m archwarden``: how the container image starts archwarden.

The image installs packages into a plain directory on PYTHONPATH rather than a virtualenv, so that
the same files run on any base with a Python 3.11 (/usr/local/bin/python3 in the upstream python
image, /usr/bin/python3 in a Debian one); there is no console script with a fixed interpreter path.
"""

import sys

from archwarden import cli

sys.exit(cli.main())
