"""Offline data: photos shipped by installed packages, generated scenes and sequences."""

from explorer.data.images import PHOTOS, load_photo

__all__ = ["PHOTOS", "load_photo"]
