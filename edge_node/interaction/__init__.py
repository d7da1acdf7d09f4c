"""Interaction: viewers' and operators' events in, authenticated, limited, applied."""
