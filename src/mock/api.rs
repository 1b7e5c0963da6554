//! Which provider's wire format an endpoint speaks: the [`Api`] enum, shared by the
//! request handler (which dispatches each provider's specifics on it) and the replay
//! corpus (one per provider). It depends on no other module of the mock.

/// Which wire format a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    Gemini,
    Openai,
    Anthropic,
    Azure,
}

impl Api {
    /// Every provider the mock speaks.
    pub(crate) const ALL: [Api; 4] = [Api::Gemini, Api::Openai, Api::Anthropic, Api::Azure];

    /// The transient error statuses this provider really sends (a reset is added to them).
    pub(crate) fn transient_statuses(self) -> [u16; 2] {
        match self {
            Api::Gemini | Api::Openai | Api::Azure => [500, 503],
            Api::Anthropic => [500, 529],
        }
    }
}
