//! anthropic wire format (to be written).
