"""Test support: real local registries (distribution 2.8), a token server, PKI and seeding.

Modules: :mod:`tests.support.pki`, :mod:`tests.support.registry`,
:mod:`tests.support.token_server`, :mod:`tests.support.proxy`, :mod:`tests.support.images`,
:mod:`tests.support.fixtures` (pytest fixtures; import them into a conftest).
"""
