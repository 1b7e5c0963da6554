//! gemini wire format (to be written).
