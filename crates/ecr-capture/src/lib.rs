//! Reading captures.
