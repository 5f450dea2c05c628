#!/usr/bin/python3
"""A stand-in IP camera for the relay's RTSP source tests: GStreamer's gst-rtsp-server serving H.264 + AAC.

Run with Debian's /usr/bin/python3 (the gi bindings come from python3-gi, python3-gst-1.0 and
gir1.2-gst-rtsp-server-1.0). Prints "ready rtsp://127.0.0.1:PORT/PATH" on stdout once it serves.
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

# A live test picture and tone, like a camera: x264 without B-frames (zerolatency) so RTP timestamps only grow,
# a keyframe every 2 s, AAC in RFC 3640 (mpeg4-generic) as cameras send it.
VIDEO = {
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=60 ! rtph264pay name=pay0 pt=96",
    # A codec FLV does not carry: the relay must refuse it by name (tests of that error).
    "vp8": "vp8enc deadline=1 ! rtpvp8pay name=pay0 pt=96",
}
LAUNCH = (
    "( videotestsrc is-live=true ! video/x-raw,width=640,height=360,framerate=30/1 ! {video} "
    "audiotestsrc is-live=true ! audioconvert ! avenc_aac ! rtpmp4gpay name=pay1 pt=97 )"
)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True, help="TCP port to serve RTSP on (127.0.0.1)")
    p.add_argument("--path", default="/cam", help="mount path, e.g. /cam")
    p.add_argument("--address", default="127.0.0.1", help="listen address (tests use loopback only)")
    p.add_argument("--video", choices=sorted(VIDEO), default="h264", help="video codec to send")
    args = p.parse_args()
    path = args.path if args.path.startswith("/") else "/" + args.path

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(LAUNCH.format(video=VIDEO[args.video]))
    # One pipeline for every client, as a camera has one encoder.
    factory.set_shared(True)
    server.get_mount_points().add_factory(path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on {args.address}:{args.port}", file=sys.stderr)
        sys.exit(1)

    loop = GLib.MainLoop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"ready rtsp://{args.address}:{args.port}{path}", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
