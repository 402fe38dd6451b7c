//! (filled in with the after-stage engine)
