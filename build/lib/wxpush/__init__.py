"""wxpush: a self-hosted WeChat service-account QR login server with instant push."""

__version__ = "0.1.0"

__all__ = ["__version__"]
