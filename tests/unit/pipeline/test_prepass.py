"""The duplicate check's partitions: by manifest bytes, and for media roots (sizes unknown before listing) few
enough that the scan's small outputs, which Ray keeps in the driver's memory, stay few."""

from dataclasses import replace

from internvl_batch.manifest.units import ManifestFile, MediaOptions, ReadUnit
from internvl_batch.pipeline.prepass import MAX_PARTITIONS, MEDIA_SCAN_OUTPUTS, scan_partitions

MEDIA = ManifestFile("s3://library/photos", "media", 0, "photos", media=MediaOptions((".jpg",), (), ()))


def manifest(gib: float) -> ManifestFile:
    return ManifestFile(f"s3://b/m-{gib}.jsonl", "jsonl", int(gib * 2**30), "m.jsonl")


def units_of(file: ManifestFile, count: int) -> list[ReadUnit]:
    return [ReadUnit(k, file, 0, 1) for k in range(count)]


def test_manifests_get_one_partition_per_256_mib_up_to_the_most():
    assert scan_partitions(units_of(manifest(0.001), 3)) == 1
    assert scan_partitions(units_of(manifest(1), 40)) == 4
    assert scan_partitions(units_of(manifest(100), 2000)) == MAX_PARTITIONS


def test_a_media_root_keeps_units_times_partitions_bounded():
    assert scan_partitions(units_of(MEDIA, 2)) == MAX_PARTITIONS  # few units: the parallelism of the most
    for units in (9, 144, 1001, 5000):
        partitions = scan_partitions(units_of(MEDIA, units))
        assert 4 <= partitions <= MAX_PARTITIONS
        assert units * partitions <= max(MEDIA_SCAN_OUTPUTS, units * 4)
    assert scan_partitions(units_of(MEDIA, 144)) == 4  # 1000 folders: 143 units of 7 and the root's own files
    # Manifests beside a root still get their share by size.
    mixed = units_of(MEDIA, 144) + [replace(u, index=144 + u.index) for u in units_of(manifest(100), 10)]
    assert scan_partitions(mixed) == MAX_PARTITIONS
