package ai.mantis.demo;

import ai.mantis.core.Bundle;
import ai.mantis.core.BundleException;
import ai.mantis.core.EdgeModel;
import ai.mantis.core.Manifest;

import org.pytorch.executorch.EValue;
import org.pytorch.executorch.Module;
import org.pytorch.executorch.Tensor;

import java.io.Closeable;
import java.util.Arrays;

/**
 * The bundle's {@code edge.pte} on ExecuTorch's Android runtime (XNNPACK), as {@link EdgeModel}. Loading it loads
 * the {@code forward} method and runs it once on a blank image, so a program the runtime cannot run fails here,
 * when the bundle is installed or opened, not on the first photo. Not thread-safe: the app runs every call,
 * {@link #close} included, on its one worker thread.
 */
final class ExecuTorchEdgeModel implements EdgeModel, Closeable {
    private final Module module;
    private final Manifest manifest;

    private ExecuTorchEdgeModel(Module module, Manifest manifest) {
        this.module = module;
        this.manifest = manifest;
    }

    /** Loads {@code bundle}'s edge program and runs the warm-up; BundleException saying why when it cannot. */
    static ExecuTorchEdgeModel load(Bundle bundle) throws BundleException {
        Manifest m = bundle.manifest();
        String path = bundle.file(m.edge().file()).getAbsolutePath();
        Module module;
        try {
            module = Module.load(path, Module.LOAD_MODE_MMAP);
        } catch (RuntimeException | LinkageError e) {
            throw new BundleException("ExecuTorch cannot load " + m.edge().file() + " (" + e + ")");
        }
        ExecuTorchEdgeModel model = new ExecuTorchEdgeModel(module, m);
        try {
            module.loadMethod("forward");
            int[] size = m.preprocessing().inputSize();
            model.run(new float[3 * size[0] * size[1]], new long[] {1, 3, size[0], size[1]});
            return model;
        } catch (RuntimeException | LinkageError e) {
            model.close();
            throw new BundleException("ExecuTorch cannot run " + m.edge().file() + " (" + e + "): export it with the executorch "
                    + "version this app runs");
        } catch (BundleException e) {
            model.close();
            throw e;
        }
    }

    @Override
    public Output run(float[] image, long[] shape) throws BundleException {
        EValue[] out = module.forward(EValue.from(Tensor.fromBlob(image, shape)));
        if (out.length != Manifest.EDGE_OUTPUTS.size() || !out[0].isTensor() || !out[1].isTensor()) {
            throw new BundleException(manifest.edge().file() + " returned " + out.length + " values, the manifest says "
                    + Manifest.EDGE_OUTPUTS);
        }
        Tensor latent = out[0].toTensor();
        Tensor logits = out[1].toTensor();
        int[] l = manifest.latent();
        long[] want = {1, l[0], l[1], l[2]};
        if (!Arrays.equals(latent.shape(), want) || !Arrays.equals(logits.shape(), new long[] {1, manifest.tasks().size()})) {
            throw new BundleException(manifest.edge().file() + " returned shapes " + Arrays.toString(latent.shape()) + " and "
                    + Arrays.toString(logits.shape()) + ", the manifest says " + Arrays.toString(want) + " and [1, "
                    + manifest.tasks().size() + "]");
        }
        return new Output(latent.getDataAsFloatArray(), logits.getDataAsFloatArray());
    }

    @Override
    public void close() {
        module.destroy();
    }
}
