//! A faithful mock of the Gemini, OpenAI and Anthropic APIs, for tests and the demo.
