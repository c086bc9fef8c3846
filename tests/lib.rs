//! Nothing: the tests are in `all/` (the `all` test binary).
