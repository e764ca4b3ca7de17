package ai.mantis.demo;

import ai.mantis.codec.Bitstream;
import ai.mantis.codec.Latent;
import ai.mantis.core.Bundle;
import ai.mantis.core.BundleInstaller;
import ai.mantis.core.EdgeModel;
import ai.mantis.core.EdgePipeline;

import android.content.res.AssetManager;
import android.test.InstrumentationTestCase;
import android.util.Log;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * On a phone or emulator: the bundle's {@code edge.pte} on ExecuTorch's Android runtime gives the Python edge
 * client's outputs for the inputs {@code benchmarks/android_device_check.py} wrote into this test's assets
 * ({@code device-check/}): the same task masks, latents within {@link #LATENT_TOLERANCE}, and it logs how many
 * bitstreams are byte-identical to Python's. Run with {@code ./gradlew connectedDebugAndroidTest}.
 */
public final class EdgeProgramTest extends InstrumentationTestCase {
    /** Largest latent difference accepted (int8 kernels on ARM may round a step differently from x86). */
    static final float LATENT_TOLERANCE = 0.05f;
    private static final String DIR = "device-check";

    private byte[] asset(String name) throws IOException {
        try (InputStream in = getInstrumentation().getContext().getAssets().open(DIR + "/" + name)) {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            byte[] buf = new byte[1 << 16];
            int n;
            while ((n = in.read(buf)) > 0) {
                out.write(buf, 0, n);
            }
            return out.toByteArray();
        }
    }

    private float[] floats(String name) throws IOException {
        byte[] data = asset(name);
        float[] out = new float[data.length / 4];
        ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(out);
        return out;
    }

    public void testEdgeProgramMatchesPython() throws Exception {
        final AssetManager assets = getInstrumentation().getContext().getAssets();
        File dest = new File(getInstrumentation().getTargetContext().getCacheDir(), "device-check-bundle");
        Bundle b = BundleInstaller.install(new BundleInstaller.Source() {
            @Override
            public InputStream open(String name) throws IOException {
                return assets.open(DIR + "/bundle/" + name, AssetManager.ACCESS_STREAMING);
            }

            @Override
            public String describe() {
                return "the test's assets/" + DIR + "/bundle";
            }
        }, dest, Bundles.policy(getInstrumentation().getTargetContext()));
        int[] size = b.manifest().preprocessing().inputSize();
        long[] shape = {1, 3, size[0], size[1]};
        int[] latent = b.manifest().latent();
        int identical = 0;
        int cases = 0;
        try (ExecuTorchEdgeModel model = ExecuTorchEdgeModel.load(b)) {
            for (String name : new String(asset("cases.txt"), StandardCharsets.UTF_8).split("\n")) {
                if (name.trim().isEmpty()) {
                    continue;
                }
                EdgeModel.Output out = model.run(floats(name + ".input.f32"), shape);
                float[] want = floats(name + ".latent.f32");
                float[] got = out.latent();
                assertEquals(name + ": latent size", want.length, got.length);
                float worst = 0;
                for (int i = 0; i < want.length; i++) {
                    worst = Math.max(worst, Math.abs(got[i] - want[i]));
                }
                assertTrue(name + ": latent differs by " + worst, worst <= LATENT_TOLERANCE);
                int tasks = b.manifest().tasks().size();
                assertEquals(name + ": task mask", EdgePipeline.taskMask(floats(name + ".logits.f32"), tasks),
                        EdgePipeline.taskMask(out.taskLogits(), tasks));
                int mask = EdgePipeline.taskMask(out.taskLogits(), tasks);
                byte[] bits = Bitstream.encode(Latent.quantize(got, latent[1] * latent[2], b.tables()), latent[0], latent[1], latent[2],
                        mask, b.tables());
                identical += Arrays.equals(bits, asset(name + ".mtb")) ? 1 : 0;
                cases++;
                Log.i("EdgeProgramTest", name + ": max latent difference " + worst);
            }
        }
        assertTrue("no cases in assets/" + DIR, cases > 0);
        Log.i("EdgeProgramTest", identical + " of " + cases + " bitstreams byte-identical to Python's");
    }
}
