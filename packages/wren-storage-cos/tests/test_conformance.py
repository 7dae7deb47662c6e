"""wren-core's storage conformance suite, run against COSStorage on the local S3 server."""
import pytest
from ibm_botocore.exceptions import ClientError

from wren.config import parse_section
from wren.errors import StorageNoSuchBucketError
from wren.testing import StorageBackendConformance
from wren_storage_cos.config import COSConfig
from wren_storage_cos.storage import COSStorage


class TestCOSConformance(StorageBackendConformance):
    @pytest.fixture
    def storage_backend(self, cos_storage):
        return cos_storage

    @pytest.fixture
    def bucket(self, cos_section):
        return cos_section["storage_bucket"]

    def test_put_into_missing_bucket_follows_creates_bucket_on_put(self, storage_backend, cos_section):
        """IBM COS and S3 answer NoSuchBucket to a PUT into a missing bucket, but the local S3
        server (SeaweedFS) creates the bucket instead. So the service's answer is played by a
        client that gives the real NoSuchBucket error, and COSStorage must say
        StorageNoSuchBucketError, as its ``creates_bucket_on_put = False`` promises."""
        assert storage_backend.creates_bucket_on_put is False

        class NoSuchBucketClient:
            def put_object(self, **kwargs):
                raise ClientError({"Error": {"Code": "NoSuchBucket", "Message": "The specified bucket does not exist"},
                                   "ResponseMetadata": {"HTTPStatusCode": 404}}, "PutObject")

        st = COSStorage(parse_section(COSConfig, "ibm_cos", cos_section), client=NoSuchBucketClient())
        with pytest.raises(StorageNoSuchBucketError, match="does not exist; create it"):
            st.put_object("wren-missing-bucket", "k", b"must not create the bucket")
