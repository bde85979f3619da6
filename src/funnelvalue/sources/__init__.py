"""Where leads come from. Each source returns the canonical lead frame (see ``leads``)."""
