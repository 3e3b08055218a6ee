"""Chat platform adapters. Only this package imports platform SDKs (slack_bolt, discord)."""
