"""The WeChat protocol, pure: bytes in, frozen dataclasses out, and back. No I/O here.

Only :mod:`wxpush.wechat.api` talks to WeChat over the network.
"""
