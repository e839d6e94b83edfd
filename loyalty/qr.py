"""QR codes as PNG or SVG bytes."""
import io

import qrcode
import qrcode.image.svg

MEDIA_TYPES = {"png": "image/png", "svg": "image/svg+xml"}


def render(text, fmt="png"):
    """The QR code of `text` as bytes in `fmt` ("png" or "svg")."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=10, border=4)
    code.add_data(text)
    code.make(fit=True)
    if fmt == "svg":
        image = code.make_image(image_factory=qrcode.image.svg.SvgPathImage)
    elif fmt == "png":
        image = code.make_image()
    else:
        raise ValueError(f"unknown QR format {fmt!r}")
    buffer = io.BytesIO()
    image.save(buffer)
    return buffer.getvalue()
