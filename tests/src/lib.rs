//! End-to-end tests of reflex live in `tests/e2e/`; this library is empty.
