"""Thin HTTP and WebSocket handlers: parse input, call one domain module, shape output."""
