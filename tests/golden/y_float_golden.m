% Golden values for the y_float protocol (tests/test_metrics_y_float.py).
% Run by make_y_float_golden.py with GNU Octave 7.3.0 and octave-image
% 2.14.0 (Debian 12 packages `octave`, `octave-image`):
%   octave --no-gui --quiet y_float_golden.m DIR NAME...
% For each NAME it reads DIR/NAME_DR.png and DIR/NAME_GT.png and prints
%   NAME mean(Y_dr) mean(Y_gt) Y_dr(1,1) Y_dr(end,end) psnr ssim
% with Y = rgb2ycbcr(im2double(png))(:,:,1), psnr = the image package's
% psnr(Y_dr, Y_gt) (peak 1 for doubles), and ssim a restatement of MATLAB's
% documented built-in ssim (Radius 1.5 -> fspecial('gaussian', 11, 1.5),
% imfilter 'replicate', DynamicRange 1 -> C1 = 1e-4, C2 = 9e-4, mean of
% the map) applied to 255*Y as DRSformer's statistic.m does. Octave's image
% package has no ssim of its own.
pkg load image
args = argv();
folder = args{1};
window = fspecial('gaussian', 11, 1.5);
C1 = (0.01 * 1)^2;
C2 = (0.03 * 1)^2;
for k = 2:numel(args)
  name = args{k};
  dr = im2double(imread(fullfile(folder, [name '_DR.png'])));
  gt = im2double(imread(fullfile(folder, [name '_GT.png'])));
  ydr = rgb2ycbcr(dr); ydr = ydr(:, :, 1);
  ygt = rgb2ycbcr(gt); ygt = ygt(:, :, 1);
  p = psnr(ydr, ygt);
  a = 255 * ydr;
  b = 255 * ygt;
  mua = imfilter(a, window, 'replicate');
  mub = imfilter(b, window, 'replicate');
  va = imfilter(a .* a, window, 'replicate') - mua .^ 2;
  vb = imfilter(b .* b, window, 'replicate') - mub .^ 2;
  cab = imfilter(a .* b, window, 'replicate') - mua .* mub;
  map = ((2 * mua .* mub + C1) .* (2 * cab + C2)) ./ ...
        ((mua .^ 2 + mub .^ 2 + C1) .* (va + vb + C2));
  printf('%s %.17g %.17g %.17g %.17g %.17g %.17g\n', name, mean(ydr(:)), ...
         mean(ygt(:)), ydr(1, 1), ydr(end, end), p, mean(map(:)));
end
