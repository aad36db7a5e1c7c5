"""The WeChat protocol, pure: bytes in, frozen dataclasses out, and back. No I/O here.

Only :mod:`wxpush.clients.wechat` talks to WeChat over the network.
"""
