#!/usr/bin/env python3
"""Writes crates/http/src/console/assets/world.svg: the land of Natural Earth 1:110m (public
domain), from world-atlas's land-110m.json (TopoJSON; `npm pack world-atlas@2`), projected
equirectangular onto a 360 x 180 box (x = longitude + 180, y = 90 - latitude), the projection
the console's map uses for its points.

    python3 scripts/world_svg.py path/to/land-110m.json > crates/http/src/console/assets/world.svg
"""
import json
import sys


def main(path):
    topo = json.load(open(path))
    sx, sy = topo["transform"]["scale"]
    tx, ty = topo["transform"]["translate"]
    arcs = []
    for arc in topo["arcs"]:
        x = y = 0
        points = []
        for dx, dy in arc:
            x += dx
            y += dy
            points.append((x * sx + tx, y * sy + ty))
        arcs.append(points)

    def ring(indices):
        out = []
        for i in indices:
            pts = arcs[i] if i >= 0 else list(reversed(arcs[~i]))
            out.extend(pts if not out else pts[1:])
        return out

    paths = []

    def draw(pts):
        return "M" + "L".join(f"{lon + 180:.1f},{90 - lat:.1f}" for lon, lat in pts) + "Z"

    for geom in topo["objects"]["land"]["geometries"]:
        polys = geom["arcs"] if geom["type"] == "MultiPolygon" else [geom["arcs"]]
        for poly in polys:
            for r in poly:
                pts = ring(r)
                # Unwrap the longitudes so that no edge jumps across the antimeridian (the
                # topology is spherical: such an edge is short on the globe).
                unwrapped = [pts[0]]
                for lon, lat in pts[1:]:
                    prev = unwrapped[-1][0]
                    while lon - prev > 180:
                        lon -= 360
                    while lon - prev < -180:
                        lon += 360
                    unwrapped.append((lon, lat))
                turn = unwrapped[-1][0] - unwrapped[0][0]
                if abs(turn) > 180:
                    # A ring around a pole (Antarctica): close it along the pole's edge.
                    pole = -90 if sum(lat for _, lat in unwrapped) < 0 else 90
                    unwrapped += [(unwrapped[-1][0], pole), (unwrapped[0][0], pole)]
                lo = min(lon for lon, _ in unwrapped)
                hi = max(lon for lon, _ in unwrapped)
                # Drawn once more shifted by a turn where it leaves the map (the SVG clips).
                for shift in (-360, 0, 360):
                    if hi + shift > -180 and lo + shift < 180:
                        paths.append(draw([(lon + shift, lat) for lon, lat in unwrapped]))
    sys.stdout.write(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 360 180">'
        "<!-- Land of Natural Earth 1:110m (public domain), via world-atlas 2.0.2 (ISC); "
        "equirectangular: x = longitude + 180, y = 90 - latitude. -->"
        '<path fill="#cfd8e3" stroke="none" d="'
        + "".join(paths)
        + '"/></svg>\n'
    )


if __name__ == "__main__":
    main(sys.argv[1])
