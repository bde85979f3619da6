"""funnelvalue: CRM funnel stages in, valued offline conversions for Google Ads out."""

__version__ = "0.1.0"
