//! openai wire format (to be written).
