"""Where conversions go. Each destination returns one outcome per conversion it was given."""
