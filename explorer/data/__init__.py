"""Offline data: photos shipped by installed packages, generated scenes and sequences."""

from explorer.data.images import PHOTOS, load_photo
from explorer.data.sentences import SENTENCES, long_text

__all__ = ["PHOTOS", "SENTENCES", "load_photo", "long_text"]
