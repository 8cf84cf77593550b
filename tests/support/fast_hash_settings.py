"""Settings for a child process that must hash passwords often: the site's, with bcrypt at cost 4.

The OpenAPI fuzz tests' server (sentinel_site/tests/test_openapi_fuzz.py) hashes a password for
every made-up username sent to /auth/token (Django's ModelBackend hashes one to keep an unknown
user's answer as slow as a known one's) and for every fuzzed /auth/signup. At the production cost
(12) that was ~5 s of the server's CPU per identity fuzzed (py-spy, 50 Hz); at cost 4 it is a few
milliseconds. The hashes stay ``bcrypt_sha256``, only their cost differs, as in the test process
itself (``tests.support.plugin._fast_bcrypt``).
"""

from django.contrib.auth.hashers import BCryptSHA256PasswordHasher

from sentinel_site.settings import *  # noqa: F403
from sentinel_site.settings import PASSWORD_HASHERS as SITE_PASSWORD_HASHERS


class FastBCryptSHA256PasswordHasher(BCryptSHA256PasswordHasher):
    """bcrypt_sha256 at cost 4 (the algorithm's minimum); reads every bcrypt_sha256 hash."""

    rounds = 4


_SITE_BCRYPT = "django.contrib.auth.hashers.BCryptSHA256PasswordHasher"
PASSWORD_HASHERS = [
    f"{__name__}.FastBCryptSHA256PasswordHasher" if path == _SITE_BCRYPT else path for path in SITE_PASSWORD_HASHERS
]
