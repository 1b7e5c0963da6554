//! classify wire format (to be written).
